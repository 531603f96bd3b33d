//! libFuzzer entry of target `instance`: see `skylark_fuzz::instance` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::instance::check(data));
