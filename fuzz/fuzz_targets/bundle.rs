//! libFuzzer entry of target `bundle`: see `skylark_fuzz::bundle` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::bundle::check(data));
