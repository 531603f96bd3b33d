//! Target `decode`: `skylark_core::decode` (`put`, `put_many`, `get`, `output`), the
//! host's validation of a call's raw `u32` arguments against guest memory, with
//! arbitrary limits, memory sizes and contents.
//!
//! A reference model written from ABI.md lists every rule the arguments break, each with
//! its status and the argument it concerns (the order in which the host checks them is
//! not part of the ABI). Asserts:
//! - the decoder accepts iff the model finds no broken rule, and then returns exactly
//!   the ids, values (in order), options and output location the model reads;
//! - when it rejects, the status is one of the broken rules' and the message names that
//!   rule's argument;
//! - it never asks the memory for a span it did not check (the memory panics if it does).

use super::input::{id_ok, ptr_raw, span, span_fits, Input};
use skylark_abi::layout::{FieldRef, GetResult};
use skylark_abi::wire::{self, GetOptions, PutOptions};
use skylark_abi::Status;
use skylark_core::decode::{self, Limits, Output};
use skylark_core::memory::GuestMemory;
use skylark_core::CallError;

/// Guest memory that panics when asked for a span outside itself: `GuestMemory`
/// promises to call `slice_unchecked` only after checking the span.
struct Strict(Vec<u8>);

impl GuestMemory for Strict {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }

    fn slice_unchecked(&self, ptr: u32, len: u32) -> Option<&[u8]> {
        assert!(
            span_fits(self.size(), ptr, len),
            "unchecked span {ptr}+{len}"
        );
        self.0.get(ptr as usize..ptr as usize + len as usize)
    }

    fn slice_mut_unchecked(&mut self, ptr: u32, len: u32) -> Option<&mut [u8]> {
        assert!(
            span_fits(self.size(), ptr, len),
            "unchecked span {ptr}+{len}"
        );
        self.0.get_mut(ptr as usize..ptr as usize + len as usize)
    }
}

/// The rules a call breaks: (status, text its message must contain).
#[derive(Default, Debug)]
struct Broken(Vec<(Status, String)>);

impl Broken {
    fn add(&mut self, status: Status, what: impl Into<String>) {
        self.0.push((status, what.into()));
    }

    /// Asserts that `e` reports one of the broken rules.
    fn assert_reports(&self, e: &CallError, call: &str) {
        assert!(
            !self.0.is_empty(),
            "{call}: rejected valid arguments: {e} [{:?}]",
            e.status
        );
        assert!(
            self.0
                .iter()
                .any(|(s, what)| *s == e.status && e.message.contains(what.as_str())),
            "{call}: error {e} [{:?}] is none of the broken rules {:?}",
            e.status,
            self.0
        );
    }

    fn assert_none(&self, call: &str) {
        assert!(
            self.0.is_empty(),
            "{call}: accepted arguments that break {:?}",
            self.0
        );
    }
}

/// Model of an id argument: the id if valid.
fn model_id<'m>(b: &mut Broken, mem: &'m [u8], ptr: u32, len: u32, what: &str) -> Option<&'m str> {
    match span(mem, ptr, len) {
        None => {
            b.add(Status::InvalidPointer, what);
            None
        }
        Some(bytes) if id_ok(bytes) => std::str::from_utf8(bytes).ok(),
        Some(_) => {
            b.add(Status::InvalidId, what);
            None
        }
    }
}

/// Model of a value argument.
fn model_value<'m>(
    b: &mut Broken,
    mem: &'m [u8],
    ptr: u32,
    len: u32,
    limits: &Limits,
) -> Option<&'m [u8]> {
    if len > limits.max_value_bytes {
        b.add(Status::ValueTooLarge, "value");
    }
    let v = span(mem, ptr, len);
    if v.is_none() {
        b.add(Status::InvalidPointer, "value");
    }
    v.filter(|_| len <= limits.max_value_bytes)
}

/// Model of an options argument: the blob's decoding (checked by the `options` target).
fn model_options<T: serde::de::DeserializeOwned + Default>(
    b: &mut Broken,
    mem: &[u8],
    ptr: u32,
    len: u32,
) -> Option<T> {
    if len > decode::MAX_OPTIONS_BYTES {
        b.add(Status::InvalidOptions, "options");
    }
    let Some(bytes) = span(mem, ptr, len) else {
        b.add(Status::InvalidPointer, "options");
        return None;
    };
    match wire::decode_options::<T>(bytes) {
        Ok(o) => Some(o),
        Err(_) => {
            b.add(Status::InvalidOptions, "options");
            None
        }
    }
}

fn model_output(b: &mut Broken, size: u64, buf_ptr: u32, buf_cap: u32, result_ptr: u32) {
    if !span_fits(size, result_ptr, GetResult::SIZE as u32) {
        b.add(Status::InvalidPointer, "result record");
    }
    if buf_cap > 0 && !span_fits(size, buf_ptr, buf_cap) {
        b.add(Status::InvalidPointer, "result buffer");
    }
}

fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    // Debug, not PartialEq: options may hold a NaN, which is not equal to itself.
    format!("{a:?}") == format!("{b:?}")
}

fn check_put(mem: &Strict, a: &[u32; 8], limits: &Limits) {
    let m = &mem.0[..];
    let mut b = Broken::default();
    let chain = model_id(&mut b, m, a[0], a[1], "chain id");
    let task = model_id(&mut b, m, a[2], a[3], "task id");
    let value = model_value(&mut b, m, a[4], a[5], limits);
    let opts = model_options::<PutOptions>(&mut b, m, a[6], a[7]);
    match decode::put(mem, a, limits) {
        Ok(req) => {
            b.assert_none("put");
            assert_eq!(Some(req.chain), chain);
            assert_eq!(req.fields, vec![(task.unwrap_or(""), value.unwrap_or(&[]))]);
            assert!(same(&Some(req.options), &opts));
        }
        Err(e) => b.assert_reports(&e, "put"),
    }
}

fn check_put_many(mem: &Strict, a: &[u32; 6], limits: &Limits) {
    let m = &mem.0[..];
    let mut b = Broken::default();
    let chain = model_id(&mut b, m, a[0], a[1], "chain id");
    let count = a[3];
    if count == 0 || count > limits.max_fields {
        b.add(Status::TooManyFields, "fields");
    }
    let table_len = u64::from(count) * FieldRef::SIZE as u64;
    let table = u32::try_from(table_len)
        .ok()
        .and_then(|len| span(m, a[2], len));
    let mut fields = Vec::new();
    match table {
        None => b.add(Status::InvalidPointer, "field table"),
        // Records are only looked at when the count is allowed (and then the table is small).
        Some(table) if count <= limits.max_fields => {
            for (i, rec) in table.chunks_exact(FieldRef::SIZE).enumerate() {
                let mut raw = [0u8; FieldRef::SIZE];
                raw.copy_from_slice(rec);
                let f = FieldRef::from_bytes(&raw);
                let what = format!("task id of field {i}");
                let task = model_id(&mut b, m, f.task_ptr, f.task_len, &what);
                if let Some(t) = task {
                    if fields.iter().any(|(seen, _)| *seen == t) {
                        b.add(Status::DuplicateField, format!("task id {t:?}"));
                    }
                }
                let value = model_value(&mut b, m, f.value_ptr, f.value_len, limits);
                if let (Some(t), Some(v)) = (task, value) {
                    fields.push((t, v));
                }
            }
        }
        Some(_) => {}
    }
    let opts = model_options::<PutOptions>(&mut b, m, a[4], a[5]);
    match decode::put_many(mem, a, limits) {
        Ok(req) => {
            b.assert_none("put_many");
            assert_eq!(Some(req.chain), chain);
            assert_eq!(req.fields, fields);
            assert!(same(&Some(req.options), &opts));
        }
        Err(e) => b.assert_reports(&e, "put_many"),
    }
}

fn check_get(mem: &Strict, a: &[u32; 7]) {
    let m = &mem.0[..];
    let mut b = Broken::default();
    let chain = model_id(&mut b, m, a[0], a[1], "chain id");
    let opts = model_options::<GetOptions>(&mut b, m, a[2], a[3]);
    model_output(&mut b, mem.size(), a[4], a[5], a[6]);
    match decode::get(mem, a) {
        Ok(req) => {
            b.assert_none("get");
            assert_eq!(Some(req.chain.as_str()), chain);
            assert_eq!(Some(req.options), opts);
            assert_eq!(
                req.out,
                Output {
                    buf_ptr: a[4],
                    buf_cap: a[5],
                    result_ptr: a[6]
                }
            );
        }
        Err(e) => b.assert_reports(&e, "get"),
    }
}

fn check_output(mem: &Strict, a: &[u32; 3]) {
    let mut b = Broken::default();
    model_output(&mut b, mem.size(), a[0], a[1], a[2]);
    match decode::output(mem, a[0], a[1], a[2]) {
        Ok(out) => {
            b.assert_none("output");
            assert_eq!(
                (out.buf_ptr, out.buf_cap, out.result_ptr),
                (a[0], a[1], a[2])
            );
        }
        Err(e) => b.assert_reports(&e, "output"),
    }
}

const MAX_MEMORY: u64 = 16 * 1024;

fn args<const N: usize>(inp: &mut Input, size: u64) -> [u32; N] {
    let mut a = [0u32; N];
    for x in a.iter_mut() {
        *x = inp.ptr_like(size);
    }
    a
}

/// Input: op, limits, memory size, the op's arguments ([`Input::ptr_like`] each), then
/// the memory's contents from offset 0.
pub fn check(data: &[u8]) {
    let mut inp = Input::new(data);
    let op = inp.u8() % 4;
    let max_value_bytes = if inp.bool() {
        inp.u32()
    } else {
        u32::from(inp.u16())
    };
    let max_fields = if inp.bool() {
        inp.u32()
    } else {
        u32::from(inp.u8())
    };
    let limits = Limits {
        max_value_bytes,
        max_fields,
    };
    let size = u64::from(inp.u16()) % (MAX_MEMORY + 1);
    let mut mem = Strict(vec![0; size as usize]);
    match op {
        0 => {
            let a = args::<8>(&mut inp, size);
            fill(&mut mem, inp.rest());
            check_put(&mem, &a, &limits);
        }
        1 => {
            let a = args::<6>(&mut inp, size);
            fill(&mut mem, inp.rest());
            check_put_many(&mem, &a, &limits);
        }
        2 => {
            let a = args::<7>(&mut inp, size);
            fill(&mut mem, inp.rest());
            check_get(&mem, &a);
        }
        _ => {
            let a = args::<3>(&mut inp, size);
            fill(&mut mem, inp.rest());
            check_output(&mem, &a);
        }
    }
}

fn fill(mem: &mut Strict, content: &[u8]) {
    let n = content.len().min(mem.0.len());
    mem.0[..n].copy_from_slice(&content[..n]);
}

/// Builds an input for [`check`] (seed corpus): op, limits, exact arguments, memory.
pub fn encode(
    op: u8,
    max_value_bytes: u32,
    max_fields: u32,
    args: &[u32],
    memory: &[u8],
) -> Vec<u8> {
    let mut out = vec![op, 1];
    out.extend(max_value_bytes.to_le_bytes());
    out.push(1);
    out.extend(max_fields.to_le_bytes());
    out.extend((memory.len() as u16).to_le_bytes());
    for a in args {
        out.extend(ptr_raw(*a));
    }
    out.extend(memory);
    out
}

/// A memory holding `items` from offset 16 on, 8-byte aligned, plus 64 spare bytes;
/// returns it with each item's (ptr, len).
pub fn lay_out(items: &[&[u8]]) -> (Vec<u8>, Vec<(u32, u32)>) {
    let mut m = vec![0u8; 16];
    let mut spans = Vec::new();
    for it in items {
        spans.push((m.len() as u32, it.len() as u32));
        m.extend_from_slice(it);
        while m.len() & 7 != 0 {
            m.push(0);
        }
    }
    m.resize(m.len() + 64, 0);
    (m, spans)
}

/// Seed inputs: valid calls of each kind, and near misses.
pub fn seeds() -> Vec<Vec<u8>> {
    let opts = wire::encode_options(&PutOptions {
        destination: Some("pi5u1".into()),
        max_latency_ms: Some(500),
        ..PutOptions::default()
    })
    .unwrap_or_default();
    let gopts = wire::encode_options(&GetOptions {
        require: vec!["t1".into()],
        ..GetOptions::default()
    })
    .unwrap_or_default();
    let (mut m, s) = lay_out(&[b"chain-1", b"t1", b"value", &opts, b"t2", b"x:y", &gopts]);
    let mut out = vec![
        encode(
            0,
            1000,
            8,
            &[
                s[0].0, s[0].1, s[1].0, s[1].1, s[2].0, s[2].1, s[3].0, s[3].1,
            ],
            &m,
        ),
        encode(
            0,
            1000,
            8,
            &[s[0].0, s[0].1, s[5].0, s[5].1, s[2].0, s[2].1, 0, 0],
            &m,
        ),
        encode(2, 1000, 8, &[s[0].0, s[0].1, s[6].0, s[6].1, 0, 16, 8], &m),
        encode(3, 1000, 8, &[0, 16, m.len() as u32 - 8], &m),
    ];
    let table = m.len() as u32;
    for (t, v) in [(s[1], s[2]), (s[4], s[2]), (s[1], s[2])] {
        let r = FieldRef {
            task_ptr: t.0,
            task_len: t.1,
            value_ptr: v.0,
            value_len: v.1,
        };
        m.extend(r.to_bytes());
    }
    out.push(encode(
        1,
        1000,
        8,
        &[s[0].0, s[0].1, table, 2, s[3].0, s[3].1],
        &m,
    ));
    out.push(encode(1, 1000, 8, &[s[0].0, s[0].1, table, 3, 0, 0], &m));
    out
}
