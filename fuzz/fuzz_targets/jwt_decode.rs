//! libFuzzer entry point; the target itself is in `fuzz/targets/jwt_decode.rs`, which
//! `cargo test` also runs on every file of `fuzz/corpus/jwt_decode/` (see docs/fuzzing.md).
#![no_main]

#[path = "../targets/jwt_decode.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
