//! Random ids, option blobs and edge pointers/lengths.

use crate::rng::Rng;
use skylark_abi::wire::{self, GetOptions, Policy, PutOptions};

/// Node names the option generator uses: this node, a node of the fuzz topology, and
/// names no topology knows.
const NODES: &[&str] = &["test-node", "fz-sat", "fz-global", "pi5u1", "nowhere"];

/// An id that breaks the rules in one of the ways a guest might.
pub fn bad_id(rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0 => Vec::new(),
        1 => vec![b'a'; 129],
        2 => b"a:b".to_vec(),
        3 => b"chain*".to_vec(),
        4 => b"a b".to_vec(),
        5 => b"a\0b".to_vec(),
        6 => b"@at:t0".to_vec(),
        7 => "t\u{e9}".as_bytes().to_vec(),
        8 => {
            let mut v = vec![b'x'; 1 + rng.index(128)];
            let i = rng.index(v.len());
            v[i] = [b':', b'/', 0xff, b'~', b'\n'][rng.index(5)];
            v
        }
        _ => {
            let n = 1 + rng.index(40);
            rng.bytes(n)
        }
    }
}

/// A pointer-shaped number around the edges of a memory of `end` bytes.
pub fn edge_ptr(rng: &mut Rng, end: u64) -> u32 {
    let e = end.min(u64::from(u32::MAX)) as u32;
    match rng.below(10) {
        0 => 0,
        1 => rng.u32() % 1024,
        2 => e.saturating_sub(rng.u32() % 64),
        3 => e,
        4 => e.saturating_add(rng.u32() % 4096),
        5 => u32::MAX - rng.u32() % 64,
        6 => 0x7fff_ffff - rng.u32() % 8,
        7 => 0x8000_0000 + rng.u32() % 8,
        _ => rng.u32(),
    }
}

/// A length-shaped number: the id limits, sizes around memory, negative as `i32`, random.
pub fn edge_len(rng: &mut Rng, end: u64) -> u32 {
    let e = end.min(u64::from(u32::MAX)) as u32;
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => 128,
        3 => 129,
        4 => u32::MAX,
        5 => 0x7fff_ffff,
        6 => 0x8000_0000,
        7 => e,
        8 => e.saturating_sub(rng.u32() % 64),
        9 => rng.u32() % 65_600,
        10 => 0xffff_fff0 + rng.u32() % 16,
        _ => rng.u32(),
    }
}

fn node(rng: &mut Rng) -> String {
    if rng.chance(85) {
        NODES[rng.index(NODES.len())].to_string()
    } else {
        String::from_utf8_lossy(&bad_id(rng)).into_owned()
    }
}

fn policy(rng: &mut Rng) -> Option<Policy> {
    rng.chance(40).then(|| Policy::ALL[rng.index(4)])
}

fn big_u64(rng: &mut Rng) -> u64 {
    match rng.below(5) {
        0 => 0,
        1 => u64::MAX,
        2 => rng.u64(),
        _ => rng.below(100_000),
    }
}

fn bandwidth(rng: &mut Rng) -> f64 {
    match rng.below(8) {
        0 => f64::NAN,
        1 => -1.0,
        2 => f64::INFINITY,
        3 => f64::MAX,
        _ => rng.below(1000) as f64 / 4.0,
    }
}

/// Put options of the documented shape, values anywhere in their ranges.
pub fn put_options(rng: &mut Rng) -> Vec<u8> {
    let o = PutOptions {
        destination: rng.chance(50).then(|| node(rng)),
        policy: policy(rng),
        max_latency_ms: rng.chance(40).then(|| big_u64(rng)),
        min_bandwidth_mbps: rng.chance(30).then(|| bandwidth(rng)),
        exec_ms: rng.chance(40).then(|| big_u64(rng)),
        successor_in_ms: rng.chance(30).then(|| big_u64(rng)),
        cleanup: rng.chance(20),
        ..PutOptions::default()
    };
    wire::encode_options(&o).unwrap_or_default()
}

/// Get options of the documented shape.
pub fn get_options(rng: &mut Rng, tasks: &[String]) -> Vec<u8> {
    let o = GetOptions {
        policy: policy(rng),
        from: rng.chance(30).then(|| node(rng)),
        local_only: rng.chance(30),
        require: (0..rng.below(3))
            .map(|_| {
                if rng.chance(90) {
                    tasks[rng.index(tasks.len())].clone()
                } else {
                    String::from_utf8_lossy(&bad_id(rng)).into_owned()
                }
            })
            .collect(),
        ..GetOptions::default()
    };
    wire::encode_options(&o).unwrap_or_default()
}

/// An options blob that is not what the ABI asks for, or at its edges.
pub fn bad_options(rng: &mut Rng, valid: Vec<u8>) -> Vec<u8> {
    match rng.below(12) {
        0 => {
            let n = 1 + rng.index(64);
            rng.bytes(n)
        }
        // Truncated.
        1 if valid.len() > 1 => valid[..rng.index(valid.len() - 1) + 1].to_vec(),
        // Trailing bytes.
        2 => {
            let mut v = valid;
            v.push(rng.u32() as u8);
            v
        }
        // An array, a scalar, nil.
        3 => vec![0x91, 0xa5, b'l', b'o', b'c', b'a', b'l'],
        4 => vec![[0xc0, 0x05, 0xc3, 0xa1][rng.index(4)]],
        // Unknown keys with nested values, then a known key with a wrong type.
        5 => {
            let mut v = vec![0x82, 0xa6];
            v.extend(b"future");
            v.extend([0x92, 0x81, 0xa1, b'k', 0xd4, 1, 2, 0xc4, 2, 0xff, 0xfe]);
            v.push(0xa7);
            v.extend(b"exec_ms");
            v.push([0xa1, 0xff, 0xcb, 0x00][rng.index(4)]);
            if v.last() == Some(&0xa1) {
                v.push(b'x');
            }
            if v.last() == Some(&0xcb) {
                v.extend([0u8; 8]);
            }
            v
        }
        // Deep nesting under an unknown key (around the decoder's depth limit).
        6 => {
            let depth = [100, 1000, 1023, 1024, 1100, 5000][rng.index(6)];
            let mut v = vec![0x81, 0xa1, b'z'];
            v.extend(core::iter::repeat_n(0x91, depth));
            v.push(0xc0);
            v
        }
        // Claims far more entries or bytes than it has.
        7 => vec![
            [0xdf, 0xdd, 0xdb, 0xc6][rng.index(4)],
            0xff,
            0xff,
            0xff,
            0xff,
        ],
        // A policy as a number, an integer key.
        8 => {
            let mut v = vec![0x81, 0xa6];
            v.extend(b"policy");
            v.push(rng.below(4) as u8);
            v
        }
        9 => vec![0x81, 0x06, 0xc3],
        // A huge require list of valid ids.
        10 => {
            let n = 1000 + rng.index(3000);
            let mut v = vec![0x81, 0xa7];
            v.extend(b"require");
            v.push(0xdc);
            v.extend((n as u16).to_be_bytes());
            for i in 0..n {
                let s = format!("t{}", i % 16);
                v.push(0xa0 | s.len() as u8);
                v.extend(s.as_bytes());
            }
            v
        }
        _ => {
            let mut v = valid;
            if !v.is_empty() {
                let i = rng.index(v.len());
                v[i] = rng.u32() as u8;
            }
            v
        }
    }
}
