//! libFuzzer entry of target `layout`: see `skylark_fuzz::layout` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::layout::check(data));
