//! Decoding of host-call arguments: raw `u32` parameters and guest memory in, validated
//! requests out. Nothing here talks to a store, so every rule is unit-testable.

use crate::error::{show_bytes, CallError};
use crate::memory::GuestMemory;
use serde::de::DeserializeOwned;
use skylark_abi::layout::{FieldRef, GetResult};
use skylark_abi::wire::{self, GetOptions, PutOptions};
use skylark_abi::{ids, Status};
use std::collections::HashSet;

/// The limits that decoding enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_value_bytes: u32,
    pub max_fields: u32,
}

/// A validated put: fields borrow guest memory, nothing is copied yet.
#[derive(Debug, PartialEq)]
pub struct PutRequest<'m> {
    pub chain: &'m str,
    pub fields: Vec<(&'m str, &'m [u8])>,
    pub options: PutOptions,
}

/// A validated get: where to deliver the result.
#[derive(Debug, PartialEq, Eq)]
pub struct GetRequest {
    pub chain: String,
    pub options: GetOptions,
    pub out: Output,
}

/// Where a result goes in guest memory: a buffer and the `GetResult` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub buf_ptr: u32,
    pub buf_cap: u32,
    pub result_ptr: u32,
}

fn id<'m>(mem: &'m dyn GuestMemory, ptr: u32, len: u32, what: &str) -> Result<&'m str, CallError> {
    let bytes = mem.read(ptr, len, what)?;
    ids::validate(bytes).map_err(|e| {
        CallError::new(
            Status::InvalidId,
            format!("{what} \"{}\" {e}", show_bytes(bytes, 48)),
        )
    })
}

fn value<'m>(
    mem: &'m dyn GuestMemory,
    ptr: u32,
    len: u32,
    task: &str,
    limits: &Limits,
) -> Result<&'m [u8], CallError> {
    if len > limits.max_value_bytes {
        return Err(CallError::new(
            Status::ValueTooLarge,
            format!(
                "value of task {task:?} is {len} bytes; SKYLARK_MAX_VALUE_BYTES is {}",
                limits.max_value_bytes
            ),
        ));
    }
    mem.read(ptr, len, &format!("value of task {task:?}"))
}

/// Largest options blob accepted: options are a few small values, so anything near this
/// is garbage, and decoding it would only cost the host time and memory.
pub const MAX_OPTIONS_BYTES: u32 = 64 * 1024;

fn options<T: DeserializeOwned + Default>(
    mem: &dyn GuestMemory,
    ptr: u32,
    len: u32,
) -> Result<T, CallError> {
    if len > MAX_OPTIONS_BYTES {
        return Err(CallError::new(
            Status::InvalidOptions,
            format!("options are {len} bytes; at most {MAX_OPTIONS_BYTES} accepted"),
        ));
    }
    let bytes = mem.read(ptr, len, "options")?;
    wire::decode_options(bytes).map_err(|e| CallError::new(Status::InvalidOptions, e.to_string()))
}

/// `skylark_put(chain_ptr, chain_len, task_ptr, task_len, value_ptr, value_len, opts_ptr, opts_len)`
pub fn put<'m>(
    mem: &'m dyn GuestMemory,
    a: &[u32; 8],
    limits: &Limits,
) -> Result<PutRequest<'m>, CallError> {
    let chain = id(mem, a[0], a[1], "chain id")?;
    let task = id(mem, a[2], a[3], "task id")?;
    let value = value(mem, a[4], a[5], task, limits)?;
    let options = options(mem, a[6], a[7])?;
    Ok(PutRequest {
        chain,
        fields: vec![(task, value)],
        options,
    })
}

/// `skylark_put_many(chain_ptr, chain_len, entries_ptr, entries_count, opts_ptr, opts_len)`
pub fn put_many<'m>(
    mem: &'m dyn GuestMemory,
    a: &[u32; 6],
    limits: &Limits,
) -> Result<PutRequest<'m>, CallError> {
    let chain = id(mem, a[0], a[1], "chain id")?;
    let count = a[3];
    if count == 0 || count > limits.max_fields {
        return Err(CallError::new(
            Status::TooManyFields,
            format!(
                "{count} fields in one call; 1..={} allowed (SKYLARK_MAX_FIELDS)",
                limits.max_fields
            ),
        ));
    }
    let table_len = u64::from(count) * FieldRef::SIZE as u64;
    let table_len = u32::try_from(table_len).map_err(|_| {
        CallError::new(
            Status::InvalidPointer,
            "field table larger than guest memory",
        )
    })?;
    let table = mem.read(a[2], table_len, "field table")?;
    let mut fields: Vec<(&str, &[u8])> = Vec::with_capacity(count as usize);
    // Task ids seen so far: the duplicate check stays linear up to SKYLARK_MAX_FIELDS.
    let mut seen: HashSet<&str> = HashSet::with_capacity(count as usize);
    for (i, rec) in table.chunks_exact(FieldRef::SIZE).enumerate() {
        let mut raw = [0u8; FieldRef::SIZE];
        raw.copy_from_slice(rec);
        let f = FieldRef::from_bytes(&raw);
        let task = id(
            mem,
            f.task_ptr,
            f.task_len,
            &format!("task id of field {i}"),
        )?;
        if !seen.insert(task) {
            return Err(CallError::new(
                Status::DuplicateField,
                format!("task id {task:?} appears more than once"),
            ));
        }
        let value = value(mem, f.value_ptr, f.value_len, task, limits)?;
        fields.push((task, value));
    }
    let options = options(mem, a[4], a[5])?;
    Ok(PutRequest {
        chain,
        fields,
        options,
    })
}

/// `skylark_put_v2(chain_ptr, chain_len, entries_ptr, entries_count, opts_ptr, opts_len,
/// versions_ptr)`: [`put_many`]'s request, and where the `entries_count` little-endian
/// `u64` versions go, checked writable before anything is stored.
pub fn put_v2<'m>(
    mem: &'m dyn GuestMemory,
    a: &[u32; 7],
    limits: &Limits,
) -> Result<(PutRequest<'m>, u32), CallError> {
    let req = put_many(mem, &[a[0], a[1], a[2], a[3], a[4], a[5]], limits)?;
    let len = u32::try_from(u64::from(a[3]) * 8).map_err(|_| {
        CallError::new(
            Status::InvalidPointer,
            "versions record larger than guest memory",
        )
    })?;
    mem.check_writable(a[6], len, "versions record")?;
    Ok((req, a[6]))
}

/// The versions record of `skylark_put_v2`: one little-endian `u64` per field.
pub fn versions_record(versions: &[u64]) -> Vec<u8> {
    versions.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Checks that an output buffer and result record are writable.
pub fn output(
    mem: &dyn GuestMemory,
    buf_ptr: u32,
    buf_cap: u32,
    result_ptr: u32,
) -> Result<Output, CallError> {
    mem.check_writable(result_ptr, GetResult::SIZE as u32, "result record")?;
    mem.check_writable(buf_ptr, buf_cap, "result buffer")?;
    Ok(Output {
        buf_ptr,
        buf_cap,
        result_ptr,
    })
}

/// `skylark_get_bundle(chain_ptr, chain_len, opts_ptr, opts_len, buf_ptr, buf_cap, result_ptr)`
pub fn get(mem: &dyn GuestMemory, a: &[u32; 7]) -> Result<GetRequest, CallError> {
    let chain = id(mem, a[0], a[1], "chain id")?.to_string();
    let options = options(mem, a[2], a[3])?;
    let out = output(mem, a[4], a[5], a[6])?;
    Ok(GetRequest {
        chain,
        options,
        out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::VecMemory;

    const LIMITS: Limits = Limits {
        max_value_bytes: 1000,
        max_fields: 4,
    };

    /// A memory with `items` laid out from offset 16 on; returns (memory, [(ptr, len)]).
    fn layout(items: &[&[u8]]) -> (VecMemory, Vec<(u32, u32)>) {
        let mut m = VecMemory(vec![0; 16]);
        let mut spans = Vec::new();
        for it in items {
            spans.push((m.0.len() as u32, it.len() as u32));
            m.0.extend_from_slice(it);
        }
        m.0.resize(m.0.len() + 64, 0);
        (m, spans)
    }

    fn table(m: &mut VecMemory, refs: &[FieldRef]) -> u32 {
        let at = m.0.len() as u32;
        for r in refs {
            m.0.extend_from_slice(&r.to_bytes());
        }
        at
    }

    #[test]
    fn put_decodes_ids_value_and_empty_options() {
        let (m, s) = layout(&[b"chain-1", b"preprocess", b"\x00\x01raw"]);
        let r = put(
            &m,
            &[s[0].0, s[0].1, s[1].0, s[1].1, s[2].0, s[2].1, 0, 0],
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.chain, "chain-1");
        assert_eq!(r.fields, vec![("preprocess", &b"\x00\x01raw"[..])]);
        assert_eq!(r.options, PutOptions::default());
    }

    #[test]
    fn put_accepts_an_empty_value_and_a_map_of_options() {
        let (m, s) = layout(&[b"c", b"t", &[0x80]]);
        let r = put(
            &m,
            &[s[0].0, s[0].1, s[1].0, s[1].1, 9999, 0, s[2].0, s[2].1],
            &LIMITS,
        )
        .unwrap();
        assert_eq!(r.fields[0].1, b"");
    }

    #[test]
    fn put_rejects_bad_pointers_ids_sizes_and_options() {
        let (m, s) = layout(&[b"c", b"t", b"v", b"a:b", &[0xc1]]);
        let size = m.0.len() as u32;
        let args = |f: &dyn Fn(&mut [u32; 8])| {
            let mut a = [s[0].0, s[0].1, s[1].0, s[1].1, s[2].0, s[2].1, 0, 0];
            f(&mut a);
            put(&m, &a, &LIMITS).unwrap_err()
        };
        assert_eq!(args(&|a| a[0] = size).status, Status::InvalidPointer);
        assert_eq!(args(&|a| a[1] = u32::MAX).status, Status::InvalidPointer);
        assert_eq!(
            args(&|a| a[4] = u32::MAX - 1).status,
            Status::InvalidPointer
        );
        assert_eq!(
            args(&|a| {
                a[6] = size + 5;
                a[7] = 1
            })
            .status,
            Status::InvalidPointer
        );
        assert_eq!(args(&|a| a[1] = 0).status, Status::InvalidId);
        let e = args(&|a| {
            a[2] = s[3].0;
            a[3] = s[3].1
        });
        assert_eq!(e.status, Status::InvalidId);
        assert!(e.message.contains("task id \"a:b\""), "{}", e.message);
        assert_eq!(args(&|a| a[5] = 1001).status, Status::ValueTooLarge);
        let e = args(&|a| {
            a[6] = s[4].0;
            a[7] = 1
        });
        assert_eq!(e.status, Status::InvalidOptions);
    }

    #[test]
    fn oversized_options_are_refused_before_decoding() {
        let (mut m, s) = layout(&[b"c", b"t", b"v"]);
        let at = m.0.len() as u32;
        m.0.resize(m.0.len() + MAX_OPTIONS_BYTES as usize + 1, 0x80);
        let a = [
            s[0].0,
            s[0].1,
            s[1].0,
            s[1].1,
            s[2].0,
            s[2].1,
            at,
            MAX_OPTIONS_BYTES + 1,
        ];
        let e = put(&m, &a, &LIMITS).unwrap_err();
        assert_eq!(e.status, Status::InvalidOptions);
        assert!(e.message.contains("at most 65536"), "{}", e.message);
    }

    #[test]
    fn put_many_decodes_the_field_table() {
        let (mut m, s) = layout(&[b"c", b"f0", b"zero", b"f1", b"one"]);
        let at = table(
            &mut m,
            &[
                FieldRef {
                    task_ptr: s[1].0,
                    task_len: s[1].1,
                    value_ptr: s[2].0,
                    value_len: s[2].1,
                },
                FieldRef {
                    task_ptr: s[3].0,
                    task_len: s[3].1,
                    value_ptr: s[4].0,
                    value_len: s[4].1,
                },
            ],
        );
        m.0.resize(m.0.len() + 8, 0);
        let r = put_many(&m, &[s[0].0, s[0].1, at, 2, 0, 0], &LIMITS).unwrap();
        assert_eq!(r.fields, vec![("f0", &b"zero"[..]), ("f1", &b"one"[..])]);
    }

    #[test]
    fn put_many_rejects_counts_duplicates_and_bad_records() {
        let (mut m, s) = layout(&[b"c", b"f0", b"v"]);
        let good = FieldRef {
            task_ptr: s[1].0,
            task_len: s[1].1,
            value_ptr: s[2].0,
            value_len: s[2].1,
        };
        let dup = table(&mut m, &[good, good]);
        let bad = table(
            &mut m,
            &[FieldRef {
                value_ptr: u32::MAX,
                value_len: 4,
                ..good
            }],
        );
        m.0.resize(m.0.len() + 8, 0);
        let call = |ptr, n| {
            put_many(&m, &[s[0].0, s[0].1, ptr, n, 0, 0], &LIMITS)
                .unwrap_err()
                .status
        };
        assert_eq!(call(dup, 0), Status::TooManyFields);
        assert_eq!(call(dup, 5), Status::TooManyFields);
        assert_eq!(call(dup, 2), Status::DuplicateField);
        assert_eq!(call(bad, 1), Status::InvalidPointer);
        assert_eq!(call(u32::MAX - 3, 1), Status::InvalidPointer);
        let huge = Limits {
            max_fields: u32::MAX,
            ..LIMITS
        };
        let e = put_many(&m, &[s[0].0, s[0].1, 0, u32::MAX, 0, 0], &huge).unwrap_err();
        assert_eq!(e.status, Status::InvalidPointer);
    }

    #[test]
    fn put_v2_checks_the_versions_record_before_anything_else() {
        let (mut m, s) = layout(&[b"c", b"f0", b"v"]);
        let at = table(
            &mut m,
            &[FieldRef {
                task_ptr: s[1].0,
                task_len: s[1].1,
                value_ptr: s[2].0,
                value_len: s[2].1,
            }],
        );
        let size = m.0.len() as u32;
        let (r, out) = put_v2(&m, &[s[0].0, s[0].1, at, 1, 0, 0, size - 8], &LIMITS).unwrap();
        assert_eq!((r.fields.len(), out), (1, size - 8));
        let e = put_v2(&m, &[s[0].0, s[0].1, at, 1, 0, 0, size - 7], &LIMITS).unwrap_err();
        assert_eq!(e.status, Status::InvalidPointer);
        assert!(e.message.starts_with("versions record"), "{}", e.message);
        // The field table's own checks come first.
        let e = put_v2(&m, &[s[0].0, s[0].1, at, 0, 0, 0, 0], &LIMITS).unwrap_err();
        assert_eq!(e.status, Status::TooManyFields);
        assert_eq!(
            versions_record(&[1, 1 << 40]),
            [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    /// `count` fields `f0`, `f1`, ... with one-byte values, the last one named `last`.
    fn many_fields(count: usize, last: &str) -> (VecMemory, [u32; 6]) {
        let mut names: Vec<Vec<u8>> = (0..count - 1)
            .map(|i| format!("f{i}").into_bytes())
            .collect();
        names.push(last.as_bytes().to_vec());
        let mut items: Vec<&[u8]> = vec![b"c", b"v"];
        items.extend(names.iter().map(Vec::as_slice));
        let (mut m, s) = layout(&items);
        let refs: Vec<FieldRef> = s[2..]
            .iter()
            .map(|&(task_ptr, task_len)| FieldRef {
                task_ptr,
                task_len,
                value_ptr: s[1].0,
                value_len: s[1].1,
            })
            .collect();
        let at = table(&mut m, &refs);
        (m, [s[0].0, s[0].1, at, count as u32, 0, 0])
    }

    #[test]
    fn a_duplicate_at_the_end_of_a_large_put_many_is_found() {
        let limits = Limits {
            max_fields: 1 << 20,
            ..LIMITS
        };
        let (m, a) = many_fields(200_000, "f7");
        let e = put_many(&m, &a, &limits).unwrap_err();
        assert_eq!(e.status, Status::DuplicateField);
        assert!(e.message.contains("\"f7\""), "{}", e.message);
        let (m, a) = many_fields(200_000, "f199999");
        assert_eq!(put_many(&m, &a, &limits).unwrap().fields.len(), 200_000);
    }

    /// The duplicate check is linear: the largest put_many SKYLARK_MAX_FIELDS allows
    /// decodes in about a second unoptimised; the former pairwise check made about
    /// 5 * 10^11 comparisons here (hours).
    #[test]
    fn the_largest_allowed_put_many_decodes_quickly() {
        let limits = Limits {
            max_fields: 1 << 20,
            ..LIMITS
        };
        let (m, a) = many_fields(1 << 20, "last");
        let started = std::time::Instant::now();
        let r = put_many(&m, &a, &limits).unwrap();
        let took = started.elapsed();
        assert_eq!(r.fields.len(), 1 << 20);
        assert_eq!(r.fields[(1 << 20) - 1], ("last", &b"v"[..]));
        assert!(
            took < std::time::Duration::from_secs(60),
            "decoding 2^20 fields took {took:?}"
        );
    }

    #[test]
    fn get_checks_output_before_anything_else_happens() {
        let (m, s) = layout(&[b"chain"]);
        let size = m.0.len() as u32;
        let r = get(&m, &[s[0].0, s[0].1, 0, 0, 0, 16, size - 8]).unwrap();
        assert_eq!(r.chain, "chain");
        assert_eq!(
            r.out,
            Output {
                buf_ptr: 0,
                buf_cap: 16,
                result_ptr: size - 8
            }
        );
        let e = get(&m, &[s[0].0, s[0].1, 0, 0, 0, 16, size - 7]).unwrap_err();
        assert_eq!(e.status, Status::InvalidPointer);
        let e = get(&m, &[s[0].0, s[0].1, 0, 0, size - 4, 16, 0]).unwrap_err();
        assert_eq!(e.status, Status::InvalidPointer);
        // A zero-capacity buffer may point anywhere: it is a size query.
        assert!(get(&m, &[s[0].0, s[0].1, 0, 0, u32::MAX, 0, 0]).is_ok());
    }
}
