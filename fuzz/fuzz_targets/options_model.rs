//! libFuzzer entry of target `options_model`: see `skylark_fuzz::options_model` for what it asserts.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| skylark_fuzz::options_model::check(data));
