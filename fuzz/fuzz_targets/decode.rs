//! libFuzzer entry of target `decode`: see `skylark_fuzz::decode` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::decode::check(data));
