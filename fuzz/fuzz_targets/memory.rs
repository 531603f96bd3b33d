//! libFuzzer entry of target `memory`: see `skylark_fuzz::memory` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::memory::check(data));
