//! libFuzzer entry of target `options`: see `skylark_fuzz::options` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::options::check(data));
