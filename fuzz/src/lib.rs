//! Property checks behind Skylark's cargo-fuzz targets: one module per target, each with
//! a `check(data)` that decodes fuzzer bytes into an operation of the host-side ABI layer,
//! runs the real `skylark-abi` / `skylark-core` code on it and panics when a property
//! does not hold (module docs say which).
//!
//! `fuzz_targets/<target>.rs` hands these to libFuzzer (`cargo +nightly fuzz run
//! <target>`, or `scripts/fuzz.sh`). The stable test `tests/tests/fuzz_regressions.rs`
//! includes this file with `#[path]` and replays every committed input of
//! `fuzz/regressions/<target>/` and `fuzz/seeds/<target>/` through the same checks, so
//! this code needs nothing but std, serde and the two Skylark crates.

pub mod bundle;
pub mod decode;
pub mod ids;
pub mod input;
pub mod instance;
pub mod layout;
pub mod memory;
pub mod msgpack;
pub mod options;
pub mod options_model;

/// A property check: panics if a property does not hold for the input.
pub type Check = fn(&[u8]);

/// Every target: its name (as in `fuzz/Cargo.toml` and the corpus directories) and check.
pub const TARGETS: &[(&str, Check)] = &[
    ("ids", ids::check),
    ("layout", layout::check),
    ("memory", memory::check),
    ("decode", decode::check),
    ("options", options::check),
    ("options_model", options_model::check),
    ("bundle", bundle::check),
    ("instance", instance::check),
];

/// The check of target `name`.
pub fn target(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Built-in seed inputs per target (written to `fuzz/seeds/` by the regression test with
/// `SKYLARK_WRITE_SEEDS=1`).
pub fn seeds() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    vec![
        (
            "ids",
            vec![
                b"6f1c2e0a-9b7d-4c1e-8f00-123456789abc".to_vec(),
                b"detect_2.v1".to_vec(),
                b"a:b".to_vec(),
                vec![b'x'; 129],
            ],
        ),
        ("layout", vec![(0u8..24).collect()]),
        (
            "memory",
            vec![
                vec![0, 0x10, 0, 3, 0xf0, 0xff, 0xff, 0xff, 0, 0x20],
                vec![1, 2, 7, 0, 0, 0, 2, 3],
            ],
        ),
        ("decode", decode::seeds()),
        ("options", options::seeds()),
        (
            "options_model",
            vec![
                vec![2, 0, 8, 0, 1, 3, 0, 1],
                vec![0x11, 7, 3, 9, 0, 1, 2, 3],
            ],
        ),
        ("bundle", bundle::seeds()),
        ("instance", instance::seeds()),
    ]
}
