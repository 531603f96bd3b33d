//! Target `options_model`: well-formed option maps built from the fuzzer input, in every
//! MessagePack encoding the format allows for each value (fixint to uint 64 and int 64,
//! fixstr to str 32, bin, map 16/32...), with documented keys holding valid or
//! wrongly-typed values, unknown keys holding arbitrary nested values, duplicates, and
//! now and then a non-string key, a non-map blob or a trailing byte.
//!
//! Where `options` finds structure in raw bytes, this target starts from structure, so
//! that "unknown keys are ignored, whatever their value" and "a known key has its
//! documented type in any encoding" are exercised on every run. Same model and
//! assertions as `options`.

use super::input::Input;
use super::msgpack::{Value, Writer};
use super::options::{check_get_blob, check_put_blob};
use skylark_abi::wire::Policy;

const KNOWN: &[&str] = &[
    "destination",
    "policy",
    "max_latency_ms",
    "min_bandwidth_mbps",
    "exec_ms",
    "successor_in_ms",
    "cleanup",
    "if_version",
    "if_absent",
    "idempotency_key",
    "from",
    "local_only",
    "require",
    "wait_for",
    "wait_ms",
];

fn small_bytes(inp: &mut Input, max: u8) -> Vec<u8> {
    let n = inp.u8() % (max + 1);
    inp.bytes(usize::from(n)).to_vec()
}

/// An id-like string: usually valid, sometimes with a byte from anywhere.
fn name(inp: &mut Input) -> Vec<u8> {
    let mut n = small_bytes(inp, 12);
    for b in n.iter_mut() {
        *b = b"abcxyz0129._-AZ"[usize::from(*b) % 15];
    }
    if inp.u8() & 7 == 0 {
        n.push(inp.u8());
    }
    n
}

/// Any value, nested at most a few levels.
fn any(inp: &mut Input, depth: u8) -> Value {
    match inp.u8() % 12 {
        0 => Value::Nil,
        1 => Value::Bool(inp.bool()),
        2 => Value::Int(i128::from(inp.u64())),
        3 => Value::Int(-i128::from(inp.u32()) - 1),
        4 => Value::F32(f32::from_bits(inp.u32())),
        5 => Value::F64(f64::from_bits(inp.u64())),
        6 => Value::Str(small_bytes(inp, 40)),
        7 => Value::Bin(small_bytes(inp, 40)),
        8 if depth < 4 => {
            let n = inp.u8() % 5;
            Value::Array((0..n).map(|_| any(inp, depth + 1)).collect())
        }
        9 if depth < 4 => {
            let n = inp.u8() % 4;
            Value::Map(
                (0..n)
                    .map(|_| (any(inp, depth + 1), any(inp, depth + 1)))
                    .collect(),
            )
        }
        10 => Value::Ext(
            inp.u8() as i8,
            small_bytes(inp, 8).into_iter().chain([0]).collect(),
        ),
        _ => Value::Int(i128::from(inp.u8() % 4)),
    }
}

/// A value for key `k`: mostly of its documented type.
fn for_key(inp: &mut Input, k: &str) -> Value {
    if inp.u8() & 3 == 0 {
        return any(inp, 1);
    }
    let string = |inp: &mut Input, s: Vec<u8>| {
        if inp.u8() & 3 == 0 {
            Value::Bin(s)
        } else {
            Value::Str(s)
        }
    };
    match k {
        "destination" | "from" | "idempotency_key" => {
            let n = name(inp);
            string(inp, n)
        }
        "policy" => {
            let i = inp.u8();
            let s = match Policy::ALL.get(usize::from(i % 6)) {
                Some(p) => p.name().as_bytes().to_vec(),
                None if i & 1 == 0 => b"fastest".to_vec(),
                None => b"Skylark".to_vec(),
            };
            string(inp, s)
        }
        "max_latency_ms" | "exec_ms" | "successor_in_ms" | "if_version" | "wait_ms" => {
            match inp.u8() % 3 {
                0 => Value::Int(i128::from(inp.u8())),
                1 => Value::Int(i128::from(inp.u64())),
                _ => Value::Int(i128::from(inp.u32())),
            }
        }
        "min_bandwidth_mbps" => match inp.u8() % 4 {
            0 => Value::F64(f64::from(inp.u16()) / 8.0),
            1 => Value::F32(f32::from_bits(inp.u32())),
            2 => Value::Int(i128::from(inp.u16())),
            _ => Value::F64(f64::from_bits(inp.u64())),
        },
        "cleanup" | "local_only" | "if_absent" => Value::Bool(inp.bool()),
        _ => {
            let n = inp.u8() % 4;
            Value::Array(
                (0..n)
                    .map(|_| {
                        let s = name(inp);
                        string(inp, s)
                    })
                    .collect(),
            )
        }
    }
}

fn key(inp: &mut Input) -> Value {
    match inp.u8() % 16 {
        0..=9 => {
            let k = KNOWN[usize::from(inp.u8()) % KNOWN.len()];
            if inp.u8() & 7 == 0 {
                Value::Bin(k.as_bytes().to_vec())
            } else {
                Value::Str(k.as_bytes().to_vec())
            }
        }
        10..=13 => Value::Str(small_bytes(inp, 20)),
        14 => Value::Bin(small_bytes(inp, 20)),
        _ => any(inp, 3),
    }
}

/// Builds one blob from the input.
pub fn blob(data: &[u8]) -> Vec<u8> {
    let mut inp = Input::new(data);
    let shape = inp.u8();
    let wide = inp.u8();
    let top = if shape & 15 == 0 {
        any(&mut inp, 0)
    } else {
        let n = inp.u8() % 9;
        let mut entries: Vec<(Value, Value)> = Vec::new();
        for _ in 0..n {
            let k = key(&mut inp);
            let v = match &k {
                Value::Str(s) | Value::Bin(s) => {
                    for_key(&mut inp, std::str::from_utf8(s).unwrap_or(""))
                }
                _ => any(&mut inp, 1),
            };
            entries.push((k, v));
        }
        Value::Map(entries)
    };
    let mut w = Writer::default();
    w.value(&top, wide);
    if shape % 16 == 1 {
        w.out.push(inp.u8());
    }
    w.out
}

pub fn check(data: &[u8]) {
    let b = blob(data);
    check_put_blob(&b);
    check_get_blob(&b);
}
