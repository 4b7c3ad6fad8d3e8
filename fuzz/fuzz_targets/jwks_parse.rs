//! libFuzzer entry point; the target itself is in `fuzz/targets/jwks_parse.rs`, which
//! `cargo test` also runs on every file of `fuzz/corpus/jwks_parse/` (see docs/fuzzing.md).
#![no_main]

#[path = "../targets/jwks_parse.rs"]
mod target;

libfuzzer_sys::fuzz_target!(|data: &[u8]| target::run(data));
