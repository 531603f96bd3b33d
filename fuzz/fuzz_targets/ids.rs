//! libFuzzer entry of target `ids`: see `skylark_fuzz::ids` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::ids::check(data));
